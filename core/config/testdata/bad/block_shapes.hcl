# Blocks given twice, scalars where blocks belong and blocks where scalars do.
listen {
  address = "127.0.0.1:8080"
}

store {
  driver = "sqlite"
}

store {
  dsn = "other.db"
}

provider "openai" {
  settings {
    a = 1
  }
  settings {
    b = 2
  }
}

tenant = "default"
