listen      = "localhost"
plugins_dir = ""

store {
  driver    = "mysql"
  max_conns = 0
}

server {
  read_header_timeout = "0s"
  idle_timeout        = "-1m"
  max_body_bytes      = -1
  memory_target_bytes = -5
  shutdown_timeout    = "30s"
}

auth {
  cache_ttl  = "0s"
  cache_size = 0
}

log {
  level  = "loud"
  format = "xml"
}

dev {
  master_key_file  = ""
  bootstrap_tenant = "Dev Team"
}

provider "openai" {
  plugin = "../openai"
  sha256 = "abc123"
  env {
    api_key  = "openai-api-key"
    base_url = "1BASE"
  }
}
