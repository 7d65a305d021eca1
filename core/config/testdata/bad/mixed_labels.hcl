# HCL v1 cannot decode a block given both with and without a label: the
# decoder's error is all there is to report.
provider "openai" {}

provider {
  plugin = "azure"
}
