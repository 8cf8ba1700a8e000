# A long-running Pampa process (worker, dispatcher, jobs, planner): writes a heartbeat.
name = File.basename($PROGRAM_NAME, ".rb")
# No TERM trap: Ruby exits at once on TERM, even inside sleep.
loop do
  File.write(File.join(Dir.home, "run", "#{name}.heartbeat"), "#{Process.pid} #{Time.now.to_f}\n")
  sleep 2
end
