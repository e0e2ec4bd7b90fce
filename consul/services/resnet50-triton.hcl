# Deployment resnet50-triton of model resnet50 (version 1), registered for model-router.
# Register on a running agent:  consul services register consul/services/resnet50-triton.hcl
service {
  id      = "resnet50-triton"
  name    = "resnet50"
  tags    = ["model-router"]
  address = "127.0.0.1"
  port    = 8101
  meta {
    model      = "resnet50"
    version    = "1"
    protocol   = "kserve_v2"
    deployment = "resnet50-triton"
    weight     = "1"
  }
  check {
    id       = "resnet50-triton-health"
    http     = "http://127.0.0.1:8101/health"
    interval = "2s"
    timeout  = "1s"
    deregister_critical_service_after = "10m"
  }
}
