provider "azure-eu" {
  plugin = "azure"
  settings {
    api_version = "2024-10-21"
    timeout_ms  = 30000
    stream      = true
    regions     = ["westeurope", "swedencentral"]
    deployments {
      "gpt-4o"      = "prod-gpt4o"
      "gpt-4o-mini" = "prod-gpt4o-mini"
      "gpt-4.1"     = "prod-gpt41"
    }
    headers {
      name  = "x-team"
      value = "ml"
    }
    headers {
      name  = "x-env"
      value = "prod"
    }
  }
  env {
    endpoint = "AZURE_OPENAI_ENDPOINT"
    api_key  = "AZURE_OPENAI_API_KEY"
    # Also in settings: the environment value wins when the variable is set.
    api_version = "AZURE_OPENAI_API_VERSION"
  }
}

tenant "default" {
  route {
    match    = "*"
    provider = "azure-eu"
  }
}
