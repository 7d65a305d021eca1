module github.com/loom-runtime/loom/sdk

go 1.26.8
