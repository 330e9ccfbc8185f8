// Command imagebuild has one job: package a static rally (or rally-operator)
// binary into a from-scratch OCI image without a container engine. It writes
// an OCI image layout and a tarball that `docker load` accepts, and prints the image's
// digest and compressed size.
//
//	go run . --binary ../../bin/rally --tag rally:dev --out ../../dist
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Paths and identities inside the image.
const (
	binaryPath = "/rally"
	caPath     = "/etc/ssl/certs/ca-certificates.crt"
	dataDir    = "/data"
	// nonRoot is the conventional "nonroot" uid/gid of distroless images, so
	// volume permissions people already set up for those carry over.
	nonRoot = 65532
)

type options struct {
	binary      string
	tag         string
	caCerts     string
	out         string
	compression string
	version     string
	platform    string
	compare     bool
	// program is "rally" (the default) or "rally-operator": what the
	// binary is, which decides the entrypoint, ports and file names.
	program string
}

// operatorProgram is the GameServerSet operator: no data directory, no
// default arguments; metrics, probes and the allocation API on its ports.
const operatorProgram = "rally-operator"

func (o options) operator() bool { return o.program == operatorProgram }

// ociDir and tarName are where run writes the image: dist/oci and
// dist/rally-image.tar for rally, dist/oci-rally-operator and
// dist/rally-operator-image.tar for the operator.
func (o options) ociDir() string {
	if o.operator() {
		return filepath.Join(o.out, "oci-"+operatorProgram)
	}
	return filepath.Join(o.out, "oci")
}

func (o options) tarName() string {
	if o.operator() {
		return filepath.Join(o.out, operatorProgram+"-image.tar")
	}
	return filepath.Join(o.out, "rally-image.tar")
}

func main() {
	var o options
	flag.StringVar(&o.binary, "binary", "", "static linux rally binary to package (required)")
	flag.StringVar(&o.tag, "tag", "rally:dev", "image reference recorded in the tarball")
	flag.StringVar(&o.caCerts, "ca-certs", "/etc/ssl/certs/ca-certificates.crt", "CA bundle copied to "+caPath)
	flag.StringVar(&o.out, "out", "dist", "output directory for oci/ and rally-image.tar")
	flag.StringVar(&o.compression, "compression", "gzip", "layer compression: gzip or zstd")
	flag.StringVar(&o.version, "version", "dev", "value of the org.opencontainers.image.version label")
	flag.StringVar(&o.platform, "platform", "linux/"+runtime.GOARCH, "platform the binary was built for")
	flag.BoolVar(&o.compare, "compare", false, "also report the size with the other compression (not written)")
	flag.StringVar(&o.program, "program", "rally", "what the binary is: rally or rally-operator")
	flag.Parse()
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}

// run builds the image, writes both artifacts under o.out and reports.
func run(o options, w io.Writer) error {
	if o.binary == "" {
		return errors.New("--binary is required")
	}
	if o.program != "" && o.program != "rally" && !o.operator() {
		return fmt.Errorf("--program %q: want rally or %s", o.program, operatorProgram)
	}
	tag, err := name.NewTag(o.tag)
	if err != nil {
		return err
	}
	img, err := build(o)
	if err != nil {
		return err
	}

	// Start the layout afresh: appending to an old one would leave stale
	// images listed in its index.json.
	ociDir := o.ociDir()
	if err := os.RemoveAll(ociDir); err != nil {
		return err
	}
	lp, err := layout.Write(ociDir, empty.Index)
	if err != nil {
		return err
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag.TagStr(),
	})); err != nil {
		return err
	}
	if err := tarball.WriteToFile(o.tarName(), tag, img); err != nil {
		return err
	}
	if err := report(w, o, img, ""); err != nil {
		return err
	}

	if o.compare {
		other := o
		other.compression = map[string]string{"gzip": "zstd", "zstd": "gzip"}[o.compression]
		alt, err := build(other)
		if err != nil {
			return err
		}
		return report(w, other, alt, " (compare only, not written)")
	}
	return nil
}

// build assembles the image in memory; nothing is written to disk.
func build(o options) (v1.Image, error) {
	platform, err := v1.ParsePlatform(o.platform)
	if err != nil {
		return nil, err
	}
	mtime, err := sourceDate()
	if err != nil {
		return nil, err
	}
	layer, err := rootLayer(o, mtime)
	if err != nil {
		return nil, err
	}

	cfg := &v1.ConfigFile{
		Architecture: platform.Architecture,
		OS:           platform.OS,
		Variant:      platform.Variant,
		Created:      v1.Time{Time: mtime},
		// mutate.Append fills in the diff IDs but not the type the spec requires.
		RootFS: v1.RootFS{Type: "layers"},
		Config: v1.Config{
			User:       fmt.Sprintf("%d:%d", nonRoot, nonRoot),
			Entrypoint: []string{binaryPath},
			// --listen-all because 127.0.0.1 inside a container is
			// unreachable from outside it.
			Cmd:        []string{"serve", "--listen-all", "--log-format", "json"},
			Env:        []string{"RALLY_DATA_DIR=" + dataDir, "SSL_CERT_FILE=" + caPath},
			WorkingDir: "/",
			ExposedPorts: map[string]struct{}{
				"7350/tcp": {}, // HTTP
				"7349/tcp": {}, // gRPC
				"4222/tcp": {}, // embedded NATS clients
			},
			Labels: map[string]string{
				"org.opencontainers.image.title":       "rally",
				"org.opencontainers.image.description": "Rally game backend",
				"org.opencontainers.image.version":     o.version,
			},
		},
	}
	if o.operator() {
		c := &cfg.Config
		c.Entrypoint = []string{"/" + operatorProgram}
		c.Cmd = nil
		c.Env = []string{"SSL_CERT_FILE=" + caPath}
		c.ExposedPorts = map[string]struct{}{
			"8080/tcp": {}, // metrics
			"8081/tcp": {}, // probes
			"7070/tcp": {}, // allocation gRPC
			"7071/tcp": {}, // allocation REST
		}
		c.Labels["org.opencontainers.image.title"] = operatorProgram
		c.Labels["org.opencontainers.image.description"] = "Rally game-server operator (GameServerSet controller and allocation API)"
	}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	return mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: mtime}, CreatedBy: "imagebuild: /rally, CA bundle, /data"},
	})
}

// rootLayer is the image's only layer. Every header field is fixed, so the
// same inputs always give the same digest.
func rootLayer(o options, mtime time.Time) (v1.Layer, error) {
	bin, err := os.ReadFile(o.binary)
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(o.caCerts)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w", err)
	}

	binName := "rally"
	if o.operator() {
		binName = operatorProgram
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries := []struct {
		name     string
		mode     int64
		uid, gid int
		body     []byte // nil for directories
	}{
		{"data/", 0o755, nonRoot, nonRoot, nil},
		{"etc/", 0o755, 0, 0, nil},
		{"etc/ssl/", 0o755, 0, 0, nil},
		{"etc/ssl/certs/", 0o755, 0, 0, nil},
		{"etc/ssl/certs/ca-certificates.crt", 0o644, 0, 0, ca},
		{binName, 0o755, 0, 0, bin},
	}
	if o.operator() {
		// The operator keeps no state on disk: no /data.
		entries = entries[1:]
	}
	for _, e := range entries {
		h := &tar.Header{
			Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid,
			ModTime: mtime, Typeflag: tar.TypeReg, Size: int64(len(e.body)),
			Format: tar.FormatPAX,
		}
		if e.body == nil {
			h.Typeflag = tar.TypeDir
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}

	data := buf.Bytes()
	opener := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
	// Highest levels: the layer is compressed once here and pulled many
	// times, so smaller beats faster. Caching keeps it compressed only once.
	opts := []tarball.LayerOption{tarball.WithCompressedCaching}
	switch o.compression {
	case "gzip":
		opts = append(opts, tarball.WithMediaType(types.OCILayer),
			tarball.WithCompressionLevel(gzip.BestCompression))
	case "zstd":
		opts = append(opts, tarball.WithCompression(compression.ZStd),
			tarball.WithMediaType(types.OCILayerZStd), tarball.WithCompressionLevel(19))
	default:
		return nil, fmt.Errorf("--compression %q: want gzip or zstd", o.compression)
	}
	return tarball.LayerFromOpener(opener, opts...)
}

// sourceDate is the timestamp stamped on files and the config:
// SOURCE_DATE_EPOCH when set (the reproducible-builds convention), else the
// Unix epoch.
func sourceDate() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// report prints one line. The compressed size is what a pull transfers:
// compressed layers plus config plus manifest. MB are 10^6 bytes.
func report(w io.Writer, o options, img v1.Image, note string) error {
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	var layerBytes int64
	for _, l := range layers {
		n, err := l.Size()
		if err != nil {
			return err
		}
		layerBytes += n
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	man, err := img.RawManifest()
	if err != nil {
		return err
	}
	total := layerBytes + int64(len(cfg)) + int64(len(man))
	fi, err := os.Stat(o.binary)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "image %s %s %s compressed %d bytes %.2f MB (layers %.2f MB) binary %d bytes %.2f MB%s\n",
		o.tag, digest, o.compression, total, mb(total), mb(layerBytes), fi.Size(), mb(fi.Size()), note)
	return err
}

func mb(n int64) float64 { return float64(n) / 1e6 }
