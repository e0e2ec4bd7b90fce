# Deployment embed-mini-cpu of model embed-mini (version 1), registered for model-router.
# Register on a running agent:  consul services register consul/services/embed-mini-cpu.hcl
service {
  id      = "embed-mini-cpu"
  name    = "embed-mini"
  tags    = ["model-router"]
  address = "127.0.0.1"
  port    = 8021
  meta {
    model      = "embed-mini"
    version    = "1"
    protocol   = "openai"
    deployment = "embed-mini-cpu"
    weight     = "1"
  }
  check {
    id       = "embed-mini-cpu-health"
    http     = "http://127.0.0.1:8021/health"
    interval = "2s"
    timeout  = "1s"
    deregister_critical_service_after = "10m"
  }
}
