// Package buildinfo holds the version stamped into the binary at link time.
package buildinfo

import (
	"encoding/json"
	"net/http"
	"runtime"
	"runtime/debug"
)

// Set by the linker: -X github.com/rallyhq/rally/internal/buildinfo.Version=...
var (
	Version = "dev"
	Commit  = ""
	Date    = ""
)

// Info describes the running binary.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Date      string `json:"date"`
	GoVersion string `json:"go_version"`
}

// Get returns the stamped build information, falling back to what the Go
// toolchain recorded (VCS revision) when the linker flags were not set.
func Get() Info {
	info := Info{Version: Version, Commit: Commit, Date: Date, GoVersion: runtime.Version()}
	if info.Commit == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					info.Commit = s.Value
				case "vcs.time":
					if info.Date == "" {
						info.Date = s.Value
					}
				}
			}
		}
	}
	return info
}

// Handler serves the build information, with extra fields (such as the
// node id) merged in, as JSON.
func Handler(extra map[string]string) http.Handler {
	body := map[string]string{}
	info := Get()
	body["version"], body["commit"], body["date"], body["go_version"] = info.Version, info.Commit, info.Date, info.GoVersion
	for k, v := range extra {
		body[k] = v
	}
	out, _ := json.Marshal(body)
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(append(out, '\n'))
	})
}
