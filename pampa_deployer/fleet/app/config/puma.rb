# Puma for the demo app, in cluster mode so a deploy restarts it without refusing a request
# (units.puma_restart: phased or hot; docs/operations.md, "Zero-downtime restarts").
#
# `directory` is the folder puma was started from as the shell named it ($PWD): the checkout, or
# ~/code/APP/current under the releases strategy (not the release folder current points at), so a
# phased or hot restart enters the code just deployed. The control app, named with its token in the
# state file, is what pampa asks when every worker runs the new code.
directory ENV.fetch("PWD", Dir.pwd)
rackup "config.ru"
environment "production"
workers Integer(ENV.fetch("PUMA_WORKERS", "2"))
threads 1, 4
bind "tcp://#{ENV.fetch('PUMA_BIND', '127.0.0.1')}:#{ENV.fetch('PUMA_PORT', '9292')}"

run_dir = File.join(Dir.home, "run")
pidfile File.join(run_dir, "puma.pid")
state_path File.join(run_dir, "puma.state")
activate_control_app "unix://#{run_dir}/puma-control.sock"

# A worker that started under `bundle exec` would keep the Gemfile of the release it started in.
prune_bundler

# A worker's thread reads each request itself instead of parking new connections in the reactor: a
# worker stopping for a restart closes the connections its reactor holds unread (puma counts them as
# idle), and their requests would fail; its threads finish theirs. Behind a buffering proxy (nginx)
# this costs nothing; without one, a slow client holds a thread while it sends its request.
queue_requests false
