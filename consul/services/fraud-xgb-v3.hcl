# Deployment fraud-xgb-v3 of model fraud-xgb (version 3), registered for model-router.
# Register on a running agent:  consul services register consul/services/fraud-xgb-v3.hcl
service {
  id      = "fraud-xgb-v3"
  name    = "fraud-xgb"
  tags    = ["model-router"]
  address = "127.0.0.1"
  port    = 8111
  meta {
    model      = "fraud-xgb"
    version    = "3"
    protocol   = "kserve_v2"
    deployment = "fraud-xgb-v3"
    weight     = "1"
  }
  check {
    id       = "fraud-xgb-v3-health"
    http     = "http://127.0.0.1:8111/health"
    interval = "2s"
    timeout  = "1s"
    deregister_critical_service_after = "10m"
  }
}
