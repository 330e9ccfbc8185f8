package liveconfig

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"go.yaml.in/yaml/v3"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

//go:embed document.schema.json
var documentSchemaJSON []byte

// DocumentSchema is the JSON Schema every document must satisfy (values,
// experiments, releases); editors can use it for completion.
func DocumentSchema() []byte { return bytes.Clone(documentSchemaJSON) }

var documentSchema = sync.OnceValue(func() *jsonschema.Schema {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(documentSchemaJSON))
	if err != nil {
		panic(err) // compiled in and tested
	}
	c := jsonschema.NewCompiler()
	const url = "liveconfig:///rally/document.schema.json"
	if err := c.AddResource(url, doc); err != nil {
		panic(err)
	}
	return c.MustCompile(url)
})

var printer = message.NewPrinter(language.English)

// Options describe where a configuration came from.
type Options struct {
	// Version names it; empty computes a content hash ("sha256:...").
	Version string
	// Source is "dir", "git", ... for display.
	Source string
	// Loaded is when it was read; zero means now.
	Loaded time.Time
}

// Build parses and validates a whole configuration. Every document must
// satisfy the document schema and its own schema (NAME.schema.json beside
// NAME.yaml validates its values), every experiment and release must be
// sound, and every override must name an existing value and keep its
// namespace valid. On any problem nothing is built: the error is an
// *InvalidError listing all of them.
func Build(files Files, opts Options) (*Snapshot, error) {
	b := &builder{files: files}
	snap := b.build()
	if len(b.problems) > 0 {
		sort.SliceStable(b.problems, func(i, j int) bool { return b.problems[i].File < b.problems[j].File })
		return nil, &InvalidError{Problems: b.problems}
	}
	snap.version = opts.Version
	if snap.version == "" {
		snap.version = ContentVersion(files)
	}
	snap.source = opts.Source
	snap.loaded = opts.Loaded
	if snap.loaded.IsZero() {
		snap.loaded = time.Now()
	}
	return snap, nil
}

// ContentVersion is the version of a configuration without one of its own:
// a hash of its paths and contents, the same on every node.
func ContentVersion(files Files) string {
	h := sha256.New()
	for _, p := range files.Paths() {
		fmt.Fprintf(h, "%d:%s:%d:", len(p), p, len(files[p]))
		h.Write(files[p])
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:16]
}

type document struct {
	file  string
	tree  map[string]any
	model docModel
}

type docModel struct {
	Values      map[string]any    `json:"values"`
	Experiments []experimentModel `json:"experiments"`
	Releases    []experimentModel `json:"releases"`
}

type experimentModel struct {
	ID          string            `json:"id"`
	Description string            `json:"description"`
	Layer       string            `json:"layer"`
	LayerSlice  []float64         `json:"layer_slice"`
	Salt        string            `json:"salt"`
	Start       string            `json:"start"`
	End         string            `json:"end"`
	Target      targetModel       `json:"target"`
	Rollout     json.RawMessage   `json:"rollout"`
	Variants    []variantModel    `json:"variants"`
	Force       map[string]string `json:"force"`
	Values      map[string]any    `json:"values"` // releases
}

type variantModel struct {
	Name   string         `json:"name"`
	Weight float64        `json:"weight"`
	Values map[string]any `json:"values"`
}

type targetModel struct {
	Regions        []string `json:"regions"`
	Devices        []string `json:"devices"`
	Platforms      []string `json:"platforms"`
	AppVersion     string   `json:"app_version"`
	Cohorts        []string `json:"cohorts"`
	ExcludeCohorts []string `json:"exclude_cohorts"`
	Players        []string `json:"players"`
	ExcludePlayers []string `json:"exclude_players"`
}

type rampModel struct {
	From  float64 `json:"from"`
	To    float64 `json:"to"`
	Start string  `json:"start"`
	End   string  `json:"end"`
}

type builder struct {
	files    Files
	problems []Problem
	docs     map[string]*document // by namespace
	schemas  map[string]*jsonschema.Schema
	snap     *Snapshot
}

func (b *builder) add(file, ptr, format string, args ...any) {
	b.problems = append(b.problems, Problem{File: file, Path: ptr, Reason: fmt.Sprintf(format, args...)})
}

var segmentRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func (b *builder) build() *Snapshot {
	b.docs = map[string]*document{}
	b.snap = &Snapshot{files: b.files, values: map[string]any{}}
	schemaFiles := map[string]string{} // namespace -> schema path
	var schemaPaths []string
	for _, p := range b.files.Paths() {
		if !Supported(p) {
			b.add(p, "", "not a configuration file (want .yaml, .yml or .json, not hidden)")
			continue
		}
		if strings.HasSuffix(p, ".schema.json") {
			schemaFiles[strings.TrimSuffix(p, ".schema.json")] = p
			schemaPaths = append(schemaPaths, p)
			continue
		}
		ns := strings.ReplaceAll(strings.TrimSuffix(p, path.Ext(p)), "/", ".")
		ok := true
		for _, seg := range strings.Split(ns, ".") {
			if !segmentRE.MatchString(seg) {
				b.add(p, "", "namespace segment %q: use letters, digits, _ and - only", seg)
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		if other, dup := b.docs[ns]; dup {
			b.add(p, "", "namespace %s is also declared by %s", ns, other.file)
			continue
		}
		b.docs[ns] = &document{file: p}
	}
	b.compileSchemas(schemaPaths, schemaFiles)

	var namespaces []string
	for ns := range b.docs {
		namespaces = append(namespaces, ns)
	}
	sort.Strings(namespaces)
	for _, ns := range namespaces {
		d := b.docs[ns]
		if !b.parse(d) {
			// Still check the values, so that one run reports them too.
			if values, ok := d.tree["values"].(map[string]any); ok && b.schemas[ns] != nil {
				b.validateValues(d.file, "/values", b.schemas[ns], values)
			}
			delete(b.docs, ns)
			continue
		}
		for k, v := range d.model.Values {
			b.snap.values[ns+"."+k] = v
		}
		if sch := b.schemas[ns]; sch != nil {
			b.validateValues(d.file, "/values", sch, d.model.Values)
		}
	}
	for _, ns := range namespaces {
		if d := b.docs[ns]; d != nil {
			b.snap.namespaces = append(b.snap.namespaces, ns)
			for k := range d.model.Values {
				if _, clash := b.docs[ns+"."+k]; clash {
					b.add(d.file, "/values/"+escapePointer(k), "key %s.%s is also the namespace of %s", ns, k, b.docs[ns+"."+k].file)
				}
			}
		}
	}
	for k := range b.snap.values {
		b.snap.keys = append(b.snap.keys, k)
	}
	sort.Strings(b.snap.keys)

	ids := map[string]string{}
	for _, ns := range b.snap.namespaces {
		d := b.docs[ns]
		for i := range d.model.Releases {
			b.experiment(d, fmt.Sprintf("/releases/%d", i), &d.model.Releases[i], KindRelease, ids)
		}
		for i := range d.model.Experiments {
			b.experiment(d, fmt.Sprintf("/experiments/%d", i), &d.model.Experiments[i], KindExperiment, ids)
		}
	}
	b.checkLayers()
	// Releases apply first and experiments after, so an experiment's
	// variant wins over a release on the same key; within a kind, by id.
	sort.Slice(b.snap.experiments, func(i, j int) bool {
		a, c := b.snap.experiments[i], b.snap.experiments[j]
		if a.Kind != c.Kind {
			return a.Kind == KindRelease
		}
		return a.ID < c.ID
	})
	return b.snap
}

// compileSchemas compiles every schema file; those named after a document
// validate it, the others are there for $ref.
func (b *builder) compileSchemas(paths []string, byNamespace map[string]string) {
	b.schemas = map[string]*jsonschema.Schema{}
	c := jsonschema.NewCompiler()
	c.UseLoader(jsonschema.SchemeURLLoader{}) // nothing from outside the configuration
	added := map[string]bool{}
	for _, p := range paths {
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b.files[p]))
		if err != nil {
			b.add(p, "", "%s", jsonSyntax(b.files[p], err))
			continue
		}
		if err := c.AddResource(schemaURL(p), doc); err != nil {
			b.add(p, "", "%s", oneLine(err.Error()))
			continue
		}
		added[p] = true
	}
	for stem, p := range byNamespace {
		if !added[p] {
			continue
		}
		sch, err := c.Compile(schemaURL(p))
		if err != nil {
			b.add(p, "", "invalid schema: %s", oneLine(err.Error()))
			continue
		}
		b.schemas[strings.ReplaceAll(stem, "/", ".")] = sch
	}
}

func schemaURL(p string) string { return "liveconfig:///" + p }

// parse reads a document, checks it against the document schema and
// decodes it. It reports whether the document can be used.
func (b *builder) parse(d *document) bool {
	raw := b.files[d.file]
	tree, err := decodeTree(d.file, raw)
	if err != nil {
		b.add(d.file, "", "%s", err.Error())
		return false
	}
	d.tree, _ = tree.(map[string]any)
	if err := documentSchema().Validate(tree); err != nil {
		b.problems = append(b.problems, schemaProblems(d.file, "", err)...)
		return false
	}
	canonical, err := json.Marshal(tree)
	if err == nil {
		err = json.Unmarshal(canonical, &d.model)
	}
	if err != nil {
		b.add(d.file, "", "%s", err.Error())
		return false
	}
	return true
}

// decodeTree parses YAML or JSON into plain JSON values (maps with string
// keys, slices, float64, string, bool, nil).
func decodeTree(file string, raw []byte) (any, error) {
	if path.Ext(file) == ".json" {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, errors.New(jsonSyntax(raw, err))
		}
		if v == nil {
			return map[string]any{}, nil
		}
		return v, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	var v any
	if err := dec.Decode(&v); err != nil && !errors.Is(err, io.EOF) {
		return nil, errors.New(oneLine(err.Error()))
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document (---) in one file")
	}
	if v == nil {
		return map[string]any{}, nil
	}
	return plainJSON(v, "")
}

func plainJSON(v any, at string) (any, error) {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			c, err := plainJSON(e, at+"/"+escapePointer(k))
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("%s: key %v is not a string", orRoot(at), k)
			}
			c, err := plainJSON(e, at+"/"+escapePointer(ks))
			if err != nil {
				return nil, err
			}
			out[ks] = c
		}
		return out, nil
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			c, err := plainJSON(e, fmt.Sprintf("%s/%d", at, i))
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case int:
		return float64(t), nil
	case int64:
		return float64(t), nil
	case uint64:
		return float64(t), nil
	case float64:
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return nil, fmt.Errorf("%s: %v is not a JSON number", orRoot(at), t)
		}
		return t, nil
	case time.Time:
		return t.Format(time.RFC3339Nano), nil
	case string, bool, nil:
		return t, nil
	}
	return nil, fmt.Errorf("%s: unsupported YAML value %T", orRoot(at), v)
}

func orRoot(ptr string) string {
	if ptr == "" {
		return "/"
	}
	return ptr
}

// jsonSyntax renders a JSON decoding error with its line and column.
func jsonSyntax(raw []byte, err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := lineCol(raw, se.Offset)
		return fmt.Sprintf("line %d column %d: %s", line, col, se.Error())
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		line, col := lineCol(raw, te.Offset)
		return fmt.Sprintf("line %d column %d: %s", line, col, te.Error())
	}
	return oneLine(err.Error())
}

// lineCol places the byte before offset (the decoder's offset counts the
// offending byte as read), 1-based.
func lineCol(raw []byte, offset int64) (int, int) {
	pos := min(max(int(offset)-1, 0), len(raw))
	before := raw[:pos]
	return bytes.Count(before, []byte("\n")) + 1, pos - bytes.LastIndexByte(before, '\n')
}

// schemaProblems turns a validation error into one problem per failed
// leaf, each at its place in the document.
func schemaProblems(file, prefix string, err error) []Problem {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return []Problem{{File: file, Path: prefix, Reason: oneLine(err.Error())}}
	}
	var leaves []Problem
	typeOnly := map[Problem]bool{}
	seen := map[Problem]bool{}
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			p := Problem{File: file, Path: prefix + pointer(e.InstanceLocation), Reason: e.ErrorKind.LocalizedString(printer)}
			if p.Path == "" {
				p.Path = "/"
			}
			if !seen[p] {
				seen[p] = true
				leaves = append(leaves, p)
				if _, ok := e.ErrorKind.(*kind.Type); ok {
					typeOnly[p] = true
				}
			}
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	// Of alternatives (a number or a ramp object), the one that got
	// further explains the problem: drop "wrong type" where another
	// alternative failed deeper inside the same value.
	var out []Problem
	for _, p := range leaves {
		deeper := false
		for _, q := range leaves {
			if typeOnly[p] && strings.HasPrefix(q.Path, strings.TrimSuffix(p.Path, "/")+"/") {
				deeper = true
				break
			}
		}
		if !deeper {
			out = append(out, p)
		}
	}
	return out
}

func pointer(tokens []string) string {
	var sb strings.Builder
	for _, t := range tokens {
		sb.WriteByte('/')
		sb.WriteString(escapePointer(t))
	}
	return sb.String()
}

func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func (b *builder) validateValues(file, at string, sch *jsonschema.Schema, values map[string]any) {
	var inst any = map[string]any{}
	if values != nil {
		inst = values
	}
	if err := sch.Validate(inst); err != nil {
		b.problems = append(b.problems, schemaProblems(file, at, err)...)
	}
}

// percentBuckets converts a percentage to buckets; it needs at most two
// decimals.
func (b *builder) percentBuckets(file, at string, p float64) int {
	n := p * Buckets / 100
	if math.Abs(n-math.Round(n)) > 1e-6 {
		b.add(file, at, "%v%% has more than two decimals", p)
	}
	return int(math.Round(n))
}

func (b *builder) time(file, at, s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		b.add(file, at, "%q is not an RFC 3339 time like 2026-03-01T00:00:00Z", s)
	}
	return t
}

func (b *builder) experiment(d *document, at string, m *experimentModel, kind Kind, ids map[string]string) {
	before := len(b.problems)
	file := d.file
	if where, dup := ids[m.ID]; dup {
		b.add(file, at+"/id", "id %q is already used by %s", m.ID, where)
	}
	ids[m.ID] = file + "#" + at
	e := &Experiment{ID: m.ID, Kind: kind, Layer: m.Layer, Description: m.Description, File: file, seed: m.ID}
	if m.Salt != "" {
		e.seed = m.Salt
	}
	e.start = b.time(file, at+"/start", m.Start)
	e.end = b.time(file, at+"/end", m.End)
	if !e.start.IsZero() && !e.end.IsZero() && !e.end.After(e.start) {
		b.add(file, at+"/end", "end %s is not after start %s", m.End, m.Start)
	}
	e.sliceFrom, e.sliceTo = 0, Buckets
	if m.LayerSlice != nil {
		if m.Layer == "" {
			b.add(file, at+"/layer_slice", "layer_slice needs a layer")
		}
		e.sliceFrom = b.percentBuckets(file, at+"/layer_slice/0", m.LayerSlice[0])
		e.sliceTo = b.percentBuckets(file, at+"/layer_slice/1", m.LayerSlice[1])
		if e.sliceTo <= e.sliceFrom {
			b.add(file, at+"/layer_slice", "[%v, %v) is empty", m.LayerSlice[0], m.LayerSlice[1])
		}
	}
	e.rollout = b.rollout(file, at+"/rollout", m.Rollout)
	e.target = b.target(file, at+"/target", &m.Target)

	if kind == KindRelease {
		v := variant{Variant: Variant{Name: "on", Lo: 0, Hi: Buckets}}
		v.overrides = b.overrides(file, at+"/values", m.Values)
		e.variants = []variant{v}
	} else {
		names := map[string]bool{}
		lo := 0
		for i, vm := range m.Variants {
			vat := fmt.Sprintf("%s/variants/%d", at, i)
			if names[vm.Name] {
				b.add(file, vat+"/name", "variant %q is declared twice", vm.Name)
			}
			names[vm.Name] = true
			w := b.percentBuckets(file, vat+"/weight", vm.Weight)
			v := variant{Variant: Variant{Name: vm.Name, Lo: lo, Hi: lo + w}}
			lo += w
			v.overrides = b.overrides(file, vat+"/values", vm.Values)
			e.variants = append(e.variants, v)
		}
		if lo != Buckets {
			b.add(file, at+"/variants", "weights add up to %v%%, want 100%%", float64(lo)*100/Buckets)
		}
		for player, name := range m.Force {
			idx := -1
			for i, v := range e.variants {
				if v.Name == name {
					idx = i
				}
			}
			if idx < 0 {
				b.add(file, at+"/force/"+escapePointer(player), "no variant %q", name)
				continue
			}
			if e.force == nil {
				e.force = map[string]int{}
			}
			e.force[player] = idx
		}
	}
	if len(b.problems) == before {
		b.snap.experiments = append(b.snap.experiments, e)
	}
}

func (b *builder) rollout(file, at string, raw json.RawMessage) ramp {
	if len(raw) == 0 || string(raw) == "null" {
		return ramp{from: Buckets, to: Buckets}
	}
	var pct float64
	if json.Unmarshal(raw, &pct) == nil {
		n := b.percentBuckets(file, at, pct)
		return ramp{from: n, to: n}
	}
	var m rampModel
	if err := json.Unmarshal(raw, &m); err != nil {
		b.add(file, at, "%s", err.Error())
		return ramp{}
	}
	r := ramp{
		from: b.percentBuckets(file, at+"/from", m.From), to: b.percentBuckets(file, at+"/to", m.To),
		start: b.time(file, at+"/start", m.Start), end: b.time(file, at+"/end", m.End),
	}
	if !r.end.After(r.start) {
		b.add(file, at+"/end", "ramp end %s is not after its start %s", m.End, m.Start)
	}
	return r
}

func (b *builder) target(file, at string, m *targetModel) target {
	t := target{
		regions: newSet(m.Regions), devices: newSet(m.Devices), platforms: newSet(m.Platforms),
		cohorts: newSet(m.Cohorts), excludeCohorts: newSet(m.ExcludeCohorts),
	}
	if len(m.Players) > 0 {
		t.players = map[string]bool{}
		for _, p := range m.Players {
			t.players[p] = true
		}
	}
	for _, p := range m.ExcludePlayers {
		if t.excludePlayers == nil {
			t.excludePlayers = map[string]bool{}
		}
		t.excludePlayers[p] = true
	}
	if m.AppVersion != "" {
		r, err := parseRange(m.AppVersion)
		if err != nil {
			b.add(file, at+"/app_version", "%v (want a range like \">=1.4.0 <2.0.0\")", err)
		}
		t.appVersion = r
	}
	return t
}

// overrides compiles a variant's or release's values: each key must name an
// existing value (namespace.key, then a path into it), and every namespace
// it touches must still satisfy its schema.
func (b *builder) overrides(file, at string, values map[string]any) []override {
	var out []override
	touched := map[string]map[string]any{} // namespace -> its values with overrides
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		kat := at + "/" + escapePointer(k)
		ns, top, sub := b.splitKey(k)
		if ns == "" {
			b.add(file, kat, "no value %s: the key must start with a namespace and one of its keys", k)
			continue
		}
		o := override{key: ns + "." + top, path: sub, value: values[k]}
		base := b.snap.values[o.key]
		if len(sub) > 0 {
			parent, where, ok := base, o.key, true
			for _, seg := range sub {
				m, isMap := parent.(map[string]any)
				if !isMap {
					b.add(file, kat, "%s is not an object", where)
					ok = false
					break
				}
				parent, where = m[seg], where+"."+seg
			}
			if !ok {
				continue
			}
		}
		out = append(out, o)
		nsValues := touched[ns]
		if nsValues == nil {
			nsValues = make(map[string]any, len(b.docs[ns].model.Values))
			for key, v := range b.docs[ns].model.Values {
				nsValues[key] = v
			}
			touched[ns] = nsValues
		}
		nsValues[top] = setPath(nsValues[top], sub, o.value)
	}
	for _, ns := range sortedNamespaces(touched) {
		v := touched[ns]
		sch := b.schemas[ns]
		if sch == nil {
			continue
		}
		if err := sch.Validate(v); err != nil {
			for _, p := range schemaProblems(file, "", err) {
				b.add(file, at, "breaks %s at %s%s: %s", schemaFileOf(ns), ns, strings.ReplaceAll(p.Path, "/", "."), p.Reason)
			}
		}
	}
	return out
}

func sortedNamespaces(m map[string]map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func schemaFileOf(ns string) string {
	return strings.ReplaceAll(ns, ".", "/") + ".schema.json"
}

// splitKey finds the namespace of an override key: the longest declared
// namespace that prefixes it and holds the next segment as a key.
func (b *builder) splitKey(k string) (ns, top string, sub []string) {
	segs := strings.Split(k, ".")
	for n := len(segs) - 1; n >= 1; n-- {
		cand := strings.Join(segs[:n], ".")
		d, ok := b.docs[cand]
		if !ok {
			continue
		}
		if _, ok := d.model.Values[segs[n]]; !ok {
			return "", "", nil
		}
		return cand, segs[n], segs[n+1:]
	}
	return "", "", nil
}

func (b *builder) checkLayers() {
	byLayer := map[string][]*Experiment{}
	for _, e := range b.snap.experiments {
		if e.Layer != "" {
			byLayer[e.Layer] = append(byLayer[e.Layer], e)
		}
	}
	for layer, es := range byLayer {
		sort.Slice(es, func(i, j int) bool { return es[i].sliceFrom < es[j].sliceFrom })
		for i := 1; i < len(es); i++ {
			prev, cur := es[i-1], es[i]
			if cur.sliceFrom < prev.sliceTo {
				b.add(cur.File, "", "experiment %s: its slice [%v, %v) of layer %s overlaps experiment %s's [%v, %v) (%s)",
					cur.ID, pct(cur.sliceFrom), pct(cur.sliceTo), layer, prev.ID, pct(prev.sliceFrom), pct(prev.sliceTo), prev.File)
			}
		}
	}
}

func pct(buckets int) float64 { return float64(buckets) * 100 / Buckets }
