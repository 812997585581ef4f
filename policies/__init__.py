"""The Rego policy library shipped with Proctor (a package only so that it installs with it)."""
