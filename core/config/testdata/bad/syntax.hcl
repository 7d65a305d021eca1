store {
  driver = "sqlite"

provider "openai" = {}
