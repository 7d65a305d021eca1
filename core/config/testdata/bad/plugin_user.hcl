plugin_user = "loom plugin"

provider "empty" {
  user = ""
}

provider "dash" {
  user = "-nobody"
}

provider "number" {
  user = 65534
}

provider "slash" {
  user = "../root"
}
