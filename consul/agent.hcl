# Single-node Consul for local development: a server that is its own leader,
# bound to loopback only. Start it with:
#   consul agent -config-file consul/agent.hcl -config-dir consul/services
# The official Consul image (docker-compose) accepts the same files under /consul/config.
node_name        = "model-router-dev"
server           = true
bootstrap_expect = 1
data_dir         = "/tmp/model-router-consul"
bind_addr        = "127.0.0.1"
client_addr      = "127.0.0.1"
advertise_addr   = "127.0.0.1"
ports {
  http     = 8500
  dns      = -1
  grpc     = -1
  grpc_tls = -1
}
ui_config { enabled = true }
performance { raft_multiplier = 1 }
disable_update_check = true
log_level = "warn"
