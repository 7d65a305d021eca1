# Provider and tenant blocks need a name label.
provider {
  plugin = "openai"
}

tenant {
  route {
    match    = "*"
    provider = "openai"
  }
}
