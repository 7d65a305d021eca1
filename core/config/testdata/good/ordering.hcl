# Providers and routes deliberately out of alphabetical order: file order
# must survive loading, since the first matching route wins.

provider "zeta" {
  plugin = "openai"
}

provider "alpha" {
  plugin = "anthropic"
}

provider "mid" {}

provider "beta" {
  plugin = "openai"
  settings {
    base_url = "http://localhost:11434/v1"
  }
}

tenant "tenant-b" {
  route {
    match    = "gpt-4o*"
    provider = "zeta"
  }
}

tenant "default" {
  route {
    match    = "local/*"
    provider = "beta"
    model    = "*"
  }
  route {
    match    = "claude-*"
    provider = "alpha"
  }
  route {
    match    = "gpt-4o-mini"
    provider = "mid"
    model    = "gpt-4o-mini-2024-07-18"
  }
  route {
    match    = "gpt-*"
    provider = "zeta"
  }
  route {
    match    = "*"
    provider = "mid"
  }
}

tenant "acme" {
  route {
    match    = "*"
    provider = "alpha"
    model    = "claude-sonnet-4"
  }
  route {
    match    = "b*"
    provider = "beta"
  }
  route {
    match    = "a*"
    provider = "zeta"
  }
}
