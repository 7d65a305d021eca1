# Several unrelated mistakes: all must be reported at once.
listen = "127.0.0.1:8080"

store {
  driver = "postgres"
  drvier = "sqlite"
}

auth {
  cache_ttl  = "soon"
  cache_size = -5
}

log {
  level = "verbose"
}

provider "openai" {
  plugin = "openai"
  sha256 = "not-a-digest"
  env {
    api_key = "OPENAI API KEY"
  }
}

tenant "default" {
  route {
    match    = "gpt-*"
    provider = "opneai"
  }
  route {
    mathc    = "*"
    provider = "openai"
  }
}
