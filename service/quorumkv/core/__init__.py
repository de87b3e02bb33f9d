"""The pure core: ballots, registers, change functions, acceptor and proposer rules, quorums.

Nothing here does I/O or imports aiohttp; every function is `(state, input) -> (state, output)`
so the protocol can be tested exhaustively with a simulated network.
"""
