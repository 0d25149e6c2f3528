"""Where agent definitions come from: YAML files in a directory."""
