# Every way a price can be wrong.
pricing {
  model "gpt-4o" {
    input        = "$2.50"
    output       = "-10"
    cached_input = "1.2500001"
  }
  model "gpt-4o-mini" {
    input     = 0.15
    effective = "2024-07-32"
  }
  model "o3" {
    output    = true
    effective = 20250610
    price     = "2.00"
  }
  model "o3" {
    input  = "1,000"
    output = 1e-7
  }
  model "o3" {
    input  = "2"
    output = "8"
  }
  model "O3" {
    input  = ["2"]
    output = "8"
  }
  model "with space" {
    input  = "1"
    output = "1"
  }
  # The same model and day twice, given with different case.
  model "gpt-5" {
    input     = "1.25"
    output    = "10"
    effective = "2025-08-07"
  }
  model "GPT-5" {
    input     = "1"
    output    = "10"
    effective = "2025-08-07"
  }
  currency = "USD"
}

# A second pricing block, with a model block without a name.
pricing {
  model {
    input  = "1"
    output = "1"
  }
}
