"""Configuration (layer A): `schema` declares every key with its check, default and doc;
`loading` turns a TOML file into a checked `Config`; `description` says it in words."""
