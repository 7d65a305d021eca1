# Every trace setting away from its default, and price overrides written
# every way the pricing block accepts them.
trace {
  durability       = "sync"
  spool_dir        = "/var/spool/loom"
  spool_max_bytes  = 5e9             # HCL v1 reads this as a float; whole numbers are accepted
  queue_size       = 2000
  batch_size       = 100
  batch_interval   = "250ms"
  max_body_bytes   = 65536
  shutdown_timeout = "1m30s"
}

pricing {
  # Strings are kept as written.
  model "gpt-4o" {
    input        = "2.50"
    output       = "10.00"
    cached_input = "1.25"
    effective    = "2024-10-02"
  }
  # A price history: an earlier price for the same model.
  model "gpt-4o" {
    input     = "5"
    output    = "15"
    effective = "2024-05-13"
  }
  # Numbers are written in their shortest decimal form, without float noise.
  model "gpt-4.1-mini" {
    input        = 0.4
    output       = 1.6
    cached_input = 0.1
  }
  # An embedding model: no output price, so give 0.
  model "text-embedding-3-small" {
    input  = 0.02
    output = 0
  }
  # An Azure deployment, by the name requests use; six decimals at most.
  model "azure/prod-gpt4o" {
    input  = "2.750001"
    output = 11
  }
}
