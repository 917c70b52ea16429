// Command protogen generates Flotilla's protobuf Go code without protoc:
// it compiles the .proto files with protocompile (pure Go, pinned in
// go.mod) and runs the protoc-gen-go plugins on them the way protoc does,
// so `make proto` and `make proto-check` need Go and nothing else.
//
//	go run ./internal/protogen -I proto -I <dir of raft.proto> -out proto \
//	    -plugin .bin/protoc-gen-go -plugin .bin/protoc-gen-go-grpc \
//	    -param paths=source_relative proto/clientpb/client.proto ...
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/pluginpb"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var imports, plugins list
	flag.Var(&imports, "I", "import path (repeatable)")
	flag.Var(&plugins, "plugin", "protoc plugin binary (repeatable)")
	out := flag.String("out", ".", "output directory")
	param := flag.String("param", "", "parameter passed to every plugin")
	flag.Parse()
	if err := run(imports, plugins, *out, *param, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "protogen:", err)
		os.Exit(1)
	}
}

func run(imports, plugins []string, out, param string, files []string) error {
	if len(files) == 0 || len(plugins) == 0 {
		return errors.New("no .proto files or no plugins")
	}
	// Files are named as protoc names them: relative to their import path.
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = filepath.ToSlash(f)
		for _, dir := range imports {
			if rel, err := filepath.Rel(dir, f); err == nil && !strings.HasPrefix(rel, "..") {
				names[i] = filepath.ToSlash(rel)
				break
			}
		}
	}
	c := protocompile.Compiler{
		Resolver:       protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: imports}),
		SourceInfoMode: protocompile.SourceInfoStandard, // comments carry over into the Go code
	}
	compiled, err := c.Compile(context.Background(), names...)
	if err != nil {
		return err
	}
	req := &pluginpb.CodeGeneratorRequest{FileToGenerate: names}
	if param != "" {
		req.Parameter = proto.String(param)
	}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) { // dependencies first, as protoc lists them
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		for i := 0; i < fd.Imports().Len(); i++ {
			add(fd.Imports().Get(i).FileDescriptor)
		}
		req.ProtoFile = append(req.ProtoFile, protodesc.ToFileDescriptorProto(fd))
	}
	for _, fd := range compiled {
		add(fd)
	}
	// Every plugin runs before anything is written: a failure leaves the
	// output as it was.
	var made []*pluginpb.CodeGeneratorResponse_File
	for _, plugin := range plugins {
		fs, err := generate(plugin, req)
		if err != nil {
			return err
		}
		made = append(made, fs...)
	}
	for _, f := range made {
		path := filepath.Join(out, filepath.FromSlash(f.GetName()))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(f.GetContent()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// generate runs one plugin on the request and returns the files it made.
func generate(plugin string, req *pluginpb.CodeGeneratorRequest) ([]*pluginpb.CodeGeneratorResponse_File, error) {
	in, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(plugin)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", plugin, err, stderr.String())
	}
	resp := &pluginpb.CodeGeneratorResponse{}
	if err := proto.Unmarshal(stdout.Bytes(), resp); err != nil {
		return nil, fmt.Errorf("%s: bad response: %w", plugin, err)
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("%s: %s", plugin, resp.GetError())
	}
	for _, f := range resp.GetFile() {
		if f.GetInsertionPoint() != "" {
			return nil, fmt.Errorf("%s: insertion points are not supported (%s)", plugin, f.GetName())
		}
	}
	return resp.GetFile(), nil
}
