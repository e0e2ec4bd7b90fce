# Deployment chat-large-a100 of model chat-large (version 1), registered for model-router.
# Register on a running agent:  consul services register consul/services/chat-large-a100.hcl
service {
  id      = "chat-large-a100"
  name    = "chat-large"
  tags    = ["model-router"]
  address = "127.0.0.1"
  port    = 8011
  meta {
    model      = "chat-large"
    version    = "1"
    protocol   = "openai"
    deployment = "chat-large-a100"
    weight     = "1"
    # every other meta key is a capability, matched by x-model-capabilities
    accelerator = "a100"
    max_context = "32768"
    domain      = "general"
  }
  check {
    id       = "chat-large-a100-health"
    http     = "http://127.0.0.1:8011/health"
    interval = "2s"
    timeout  = "1s"
    deregister_critical_service_after = "10m"
  }
}
