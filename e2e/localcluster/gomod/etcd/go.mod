// Wrapper module: builds the etcd server binary from go.etcd.io/etcd/server/v3, whose own
// go.mod has replace directives (so plain `go install` refuses it).
module quorumkv.dev/localcluster/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 v3.6.16
