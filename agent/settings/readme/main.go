// Command readme writes the agent's settings table into README.md, between
// the markers, from the declarations (agent.Config.Settings). Run it from
// the repository's root after adding or changing a setting:
//
//	go run ./agent/settings/readme
package main

import (
	"fmt"
	"os"

	"github.com/otelbee/otelbee/agent"
	"github.com/otelbee/otelbee/agent/settings"
)

func main() {
	path := "README.md"
	if len(os.Args) > 1 {
		path = os.Args[1]
	}
	if err := run(path); err != nil {
		fmt.Fprintln(os.Stderr, "readme:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	doc, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := settings.Replace(string(doc), agent.SettingsMarkdown())
	if err != nil {
		return fmt.Errorf("updating %s: %w", path, err)
	}
	return os.WriteFile(path, []byte(out), 0o644)
}
