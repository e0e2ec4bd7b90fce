# Deployment chat-small-v1 of model chat-small (version 1), registered for model-router.
# Register on a running agent:  consul services register consul/services/chat-small-v1.hcl
service {
  id      = "chat-small-v1"
  name    = "chat-small"
  tags    = ["model-router"]
  address = "127.0.0.1"
  port    = 8001
  meta {
    model      = "chat-small"
    version    = "1"
    protocol   = "openai"
    deployment = "chat-small-v1"
    weight     = "1"
  }
  check {
    id       = "chat-small-v1-health"
    http     = "http://127.0.0.1:8001/health"
    interval = "2s"
    timeout  = "1s"
    deregister_critical_service_after = "10m"
  }
}
