listen = "0.0.0.0:9090"

store {
  driver    = "postgres"
  dsn       = "postgres://loom@db:5432/loom?sslmode=disable"
  max_conns = 32
}

server {
  max_body_bytes   = 1048576
  shutdown_timeout = "1m"
}

log {
  level  = "warn"
  format = "json"
}

provider "openai" {
  sha256 = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"
  env {
    api_key = "OPENAI_API_KEY"
  }
}

tenant "default" {
  route {
    match    = "*"
    provider = "openai"
  }
}
