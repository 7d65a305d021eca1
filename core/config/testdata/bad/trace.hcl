# Invalid trace values and wrong types.
trace {
  durability       = "eventually"
  spool_dir        = ""
  spool_max_bytes  = 0
  queue_size       = -1
  batch_size       = "lots"
  batch_interval   = "0s"
  max_body_bytes   = 1.5
  shutdown_timeout = 10
  spool_size       = 1
}
