package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// fakeInputs writes a stand-in binary and CA bundle; the builder only copies
// bytes, so neither has to be real.
func fakeInputs(t *testing.T) options {
	t.Helper()
	dir := t.TempDir()
	o := options{
		binary: filepath.Join(dir, "rally"), caCerts: filepath.Join(dir, "ca.crt"),
		out: filepath.Join(dir, "dist"), tag: "rally:test", version: "v0.0.0-test",
		compression: "gzip", platform: "linux/amd64",
	}
	if err := os.WriteFile(o.binary, []byte("\x7fELF not really"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(o.caCerts, []byte("-----BEGIN CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestBuildImage(t *testing.T) {
	o := fakeInputs(t)
	img, err := build(o)
	if err != nil {
		t.Fatal(err)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" {
		t.Errorf("User = %q", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{"/rally"}) {
		t.Errorf("Entrypoint = %q", c.Entrypoint)
	}
	if !slices.Equal(c.Cmd, []string{"serve", "--listen-all", "--log-format", "json"}) {
		t.Errorf("Cmd = %q", c.Cmd)
	}
	if !slices.Contains(c.Env, "RALLY_DATA_DIR=/data") {
		t.Errorf("Env = %q", c.Env)
	}
	for _, p := range []string{"7350/tcp", "7349/tcp", "4222/tcp"} {
		if _, ok := c.ExposedPorts[p]; !ok {
			t.Errorf("port %s not exposed", p)
		}
	}
	if cf.RootFS.Type != "layers" || len(cf.RootFS.DiffIDs) != 1 {
		t.Errorf("rootfs = %+v, want one layer of type layers", cf.RootFS)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform = %s/%s", cf.OS, cf.Architecture)
	}
	if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type = %s", mt)
	}

	// Extract flattens the layers into one tar: the filesystem a container sees.
	got := map[string]*tar.Header{}
	var binary []byte
	tr := tar.NewReader(mutate.Extract(img))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := "/" + strings.TrimSuffix(h.Name, "/")
		got[name] = h
		if name == "/rally" {
			binary, _ = io.ReadAll(tr)
		}
	}
	want := []struct {
		path     string
		typ      byte
		mode     int64
		uid, gid int
	}{
		{"/rally", tar.TypeReg, 0o755, 0, 0},
		{"/etc/ssl/certs/ca-certificates.crt", tar.TypeReg, 0o644, 0, 0},
		{"/data", tar.TypeDir, 0o755, 65532, 65532},
	}
	for _, w := range want {
		h, ok := got[w.path]
		if !ok {
			t.Errorf("%s missing from layer", w.path)
			continue
		}
		if h.Typeflag != w.typ || h.Mode != w.mode || h.Uid != w.uid || h.Gid != w.gid {
			t.Errorf("%s: type %c mode %o owner %d:%d, want type %c mode %o owner %d:%d",
				w.path, h.Typeflag, h.Mode, h.Uid, h.Gid, w.typ, w.mode, w.uid, w.gid)
		}
	}
	if src, _ := os.ReadFile(o.binary); !bytes.Equal(binary, src) {
		t.Error("/rally differs from the input binary")
	}
}

// TestReproducible: same inputs, same digest, for both compressions.
func TestReproducible(t *testing.T) {
	o := fakeInputs(t)
	for _, comp := range []string{"gzip", "zstd"} {
		o.compression = comp
		a, err := build(o)
		if err != nil {
			t.Fatal(err)
		}
		b, err := build(o)
		if err != nil {
			t.Fatal(err)
		}
		da, _ := a.Digest()
		db, _ := b.Digest()
		if da != db {
			t.Errorf("%s: digests differ: %s vs %s", comp, da, db)
		}
		l, _ := a.Layers()
		if mt, _ := l[0].MediaType(); comp == "zstd" && mt != types.OCILayerZStd {
			t.Errorf("zstd layer media type = %s", mt)
		}
	}
}

// TestRunWritesArtifacts reads both outputs back to check they hold the image.
func TestRunWritesArtifacts(t *testing.T) {
	o := fakeInputs(t)
	o.compare = true
	var out bytes.Buffer
	// Twice: the second run must replace the layout, not add to it.
	for range 2 {
		out.Reset()
		if err := run(o, &out); err != nil {
			t.Fatal(err)
		}
	}
	want, err := build(o)
	if err != nil {
		t.Fatal(err)
	}
	wantDigest, _ := want.Digest()

	idx, err := layout.ImageIndexFromPath(filepath.Join(o.out, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != wantDigest {
		t.Errorf("layout index = %+v, want one image %s", im.Manifests, wantDigest)
	}

	tb, err := tarball.ImageFromPath(filepath.Join(o.out, "rally-image.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := tb.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532:65532" {
		t.Errorf("tarball image User = %q", cf.Config.User)
	}

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], wantDigest.String()) ||
		!strings.Contains(lines[0], " gzip compressed ") || !strings.Contains(lines[1], " zstd compressed ") {
		t.Errorf("report:\n%s", out.String())
	}
}

// TestOperatorImage: --program rally-operator packages the operator under
// its own name and files, without the server's data directory and arguments.
func TestOperatorImage(t *testing.T) {
	o := fakeInputs(t)
	o.program = operatorProgram
	o.tag = "rally-operator:test"
	if err := run(o, io.Discard); err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(filepath.Join(o.out, "rally-operator-image.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(o.out, "oci-rally-operator", "index.json")); err != nil {
		t.Errorf("OCI layout: %v", err)
	}
	if _, err := os.Stat(filepath.Join(o.out, "rally-image.tar")); err == nil {
		t.Error("the operator build wrote the server's tarball")
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if !slices.Equal(c.Entrypoint, []string{"/rally-operator"}) || len(c.Cmd) != 0 || c.User != "65532:65532" {
		t.Errorf("Entrypoint %q Cmd %q User %q", c.Entrypoint, c.Cmd, c.User)
	}
	for _, p := range []string{"8080/tcp", "8081/tcp", "7070/tcp", "7071/tcp"} {
		if _, ok := c.ExposedPorts[p]; !ok {
			t.Errorf("port %s not exposed", p)
		}
	}
	files := map[string]bool{}
	tr := tar.NewReader(mutate.Extract(img))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files["/"+strings.TrimSuffix(h.Name, "/")] = true
	}
	if !files["/rally-operator"] || files["/rally"] || files["/data"] || !files["/etc/ssl/certs/ca-certificates.crt"] {
		t.Errorf("files %v", files)
	}
}
