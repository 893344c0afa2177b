package pb

// Regenerate from the repository root with
//
//	PATH="$PATH:$HOME/go/bin" go generate ./internal/wire/pb
//
// It needs protoc on PATH and protoc-gen-go at the version of google.golang.org/protobuf in go.mod
// (go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12, which lands in $HOME/go/bin),
// so that the generated code and the runtime it calls agree.

//go:generate protoc --proto_path=../../../proto --go_out=. --go_opt=paths=source_relative common.proto control.proto data.proto
