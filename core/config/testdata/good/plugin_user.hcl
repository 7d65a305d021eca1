# Plugins run as loom-plugin, except the untrusted one, which gets a user of
# its own.
plugin_user = "loom-plugin"

provider "openai" {
  env { api_key = "OPENAI_API_KEY" }
}

provider "community" {
  plugin = "echo"
  user   = "loom-community"
}

provider "by-uid" {
  plugin = "echo"
  user   = "65534"
}
