module quorumkv.dev/localcluster/probe

go 1.24.0
