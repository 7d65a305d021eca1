provider "OpenAI" {}

provider "_local" {}

provider "openai" {}

provider "openai" {
  plugin = "azure"
}

provider "openai" {}

tenant "Acme Corp" {}

tenant "default" {
  route {
    match    = "*"
    provider = "openai"
  }
}

tenant "default" {}
