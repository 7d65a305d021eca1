listen      = 5
plugins_dir = ["bin/plugins"]

store {
  driver    = "sqlite"
  max_conns = 1.5
  dsn {
    path = "x.db"
  }
}

server = "fast"

auth {
  cache_ttl  = "soon"
  cache_size = "many"
}

log {
  level = true
}

provider "openai" {
  plugin   = 7
  settings = "none"
  env {
    api_key = 12
  }
}

tenant "default" {
  route {
    match    = ["*"]
    provider = "openai"
  }
}

tenant "acme" {
  route = "openai"
}
