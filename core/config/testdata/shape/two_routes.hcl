listen = "127.0.0.1:8080"

store {
  driver = "sqlite"
}

provider "zeta" {
  settings {
    deployments {
      "gpt-4o" = "my-deploy"
    }
  }
}

provider "alpha" {}

tenant "default" {
  route {
    match    = "b*"
    provider = "zeta"
  }
  route {
    match    = "a*"
    provider = "alpha"
    model    = "x-*"
  }
}
