provider "openai" {}

provider "anthropic" {}

tenant "default" {
  route {
    match    = "gpt-[45]*"
    provider = "openai"
  }
  route {
    match    = "claude-?"
    provider = "anthropic"
  }
  route {
    match    = "*"
    provider = "opneai"
  }
  route {
    match    = "gpt-4o"
    provider = "openai"
    model    = "azure/*"
  }
  route {
    match    = "my model"
    provider = "mistral"
  }
}
