store {
  driver = "postgres"
}

provider "openai" {}

tenant "default" {
  route {
    provider = "openai"
  }
  route {
    match = "*"
  }
  route {}
}
