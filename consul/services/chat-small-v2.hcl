# Deployment chat-small-v2 of model chat-small (version 2), registered for model-router.
# Register on a running agent:  consul services register consul/services/chat-small-v2.hcl
service {
  id      = "chat-small-v2"
  name    = "chat-small"
  tags    = ["model-router"]
  address = "127.0.0.1"
  port    = 8002
  meta {
    model      = "chat-small"
    version    = "2"
    protocol   = "openai"
    deployment = "chat-small-v2"
    weight     = "1"
  }
  check {
    id       = "chat-small-v2-health"
    http     = "http://127.0.0.1:8002/health"
    interval = "2s"
    timeout  = "1s"
    deregister_critical_service_after = "10m"
  }
}
