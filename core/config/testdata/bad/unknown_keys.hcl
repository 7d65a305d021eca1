# A typo at every level of the schema.
lisen = "127.0.0.1:8080"

stor {}

store {
  drvier = "sqlite"
}

server {
  idle_timout = "1m"
}

provider "openai" {
  plugn = "openai"
  setings {
    base_url = "x"
  }
}

tenant "default" {
  rout {}
  route {
    match    = "*"
    provider = "openai"
  }
  route {
    mathc    = "gpt-*"
    provider = "openai"
  }
}

# Dotted keys are literal keys in HCL v1, not paths.
"store.max_conns" = 4
