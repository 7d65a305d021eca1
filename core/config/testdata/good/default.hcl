# Loom's default configuration: works out of the box with `make run`.
#
# Every scalar setting can be overridden from the environment: LOOM_ followed by
# the setting's path in upper case, with dots and underscores as "_"
# (listen -> LOOM_LISTEN, store.driver -> LOOM_STORE_DRIVER,
# auth.cache_ttl -> LOOM_AUTH_CACHE_TTL). Secrets never live in this file: a
# provider's `env` block names the variables that hold them.

listen      = "127.0.0.1:8080"
plugins_dir = "bin/plugins"

store {
  driver = "sqlite"       # or "postgres" with LOOM_STORE_DSN=postgres://…
  dsn    = ".loom/loom.db"
}

server {
  read_header_timeout = "10s"
  body_timeout        = "30s"   # longest pause while a client sends its body
  idle_timeout        = "120s"
  max_body_bytes      = 10485760
  shutdown_timeout    = "30s"
  memory_target_bytes = 67108864  # the GC keeps Loom's Go memory near this (0: Go's defaults)
}

auth {
  cache_ttl  = "5s"   # a revoked key stops working within this time
  cache_size = 10000
}

log {
  level  = "info"
  format = "text"
}

# Every request is recorded as a trace. Traces are queued and written to the
# store in batches; while the store is down, batches wait in the spool.
trace {
  durability       = "async"        # or "sync": a response completes only once its trace is durable
  spool_dir        = ".loom/spool"  # where batches wait while the store is down
  spool_max_bytes  = 1073741824     # beyond this Loom answers 503 rather than serve untraced traffic
  queue_size       = 10000          # traces waiting for the writer
  batch_size       = 500            # traces per store transaction, at most
  batch_interval   = "5ms"          # longest a trace waits for its batch to fill
  max_body_bytes   = 8388608        # a longer captured body is truncated in the trace (and flagged)
  shutdown_timeout = "10s"          # how long flushing may take at shutdown
}

# Costs come from the price catalog built into Loom (OpenAI's list prices, in
# US dollars per 1M tokens). A pricing block adds models or replaces their
# prices; traces then name the catalog version as "<version>+local.<hash>".
# pricing {
#   model "gpt-4o" {
#     input        = "2.50"
#     output       = "10.00"
#     cached_input = "1.25"         # optional: cached prompt tokens, else at input
#     effective    = "2024-10-01"   # optional: from this day (UTC); else always
#   }
#   model "azure/my-deployment" {   # a model or deployment the catalog lacks
#     input  = "0.15"
#     output = "0.60"
#   }
# }

# Development conveniences. Remove this block in production and set
# LOOM_MASTER_KEY (32 bytes, base64 or hex) and LOOM_ADMIN_TOKEN instead.
dev {
  master_key_file  = ".loom/master.key"
  bootstrap_tenant = "dev"
}

provider "openai" {
  plugin = "openai"
  settings {
    base_url = "https://api.openai.com/v1"
  }
  env {
    api_key  = "OPENAI_API_KEY"
    base_url = "OPENAI_BASE_URL"
  }
}

provider "azure" {
  plugin = "azure"
  settings {
    api_version = "2024-10-21"
  }
  env {
    endpoint = "AZURE_OPENAI_ENDPOINT"
    api_key  = "AZURE_OPENAI_API_KEY"
  }
}

# The example provider from examples/echo-provider: answers by repeating the
# last user message, so Loom can be tried without any provider's API key.
provider "echo" {
  plugin = "echo"
}

# Routes: first match wins. The "default" tenant applies to every tenant
# without a block of its own. `model` rewrites the model sent upstream; a "*"
# in it stands for what the "*" of `match` matched.
tenant "default" {
  route {
    match    = "azure/*"   # azure/<deployment> goes straight to that deployment
    provider = "azure"
  }
  route {
    match    = "echo/*"
    provider = "echo"
    model    = "*"         # echo/hello reaches the echo plugin as model "hello"
  }
  route {
    match    = "*"
    provider = "openai"
  }
}
