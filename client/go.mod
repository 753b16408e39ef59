module github.com/sandbox-exec/pyexec/client

// The client asks for no newer Go than it needs: math/rand/v2 (1.22).
go 1.22

require github.com/vmihailenco/msgpack/v5 v5.4.1

require github.com/vmihailenco/tagparser/v2 v2.0.0 // indirect
