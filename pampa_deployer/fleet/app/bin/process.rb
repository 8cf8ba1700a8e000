# A long-running Pampa process (worker, dispatcher, jobs, planner): runs one short job after another,
# each writing a heartbeat. On TERM it finishes the job it is running, then exits (a graceful stop).
name = File.basename($PROGRAM_NAME, ".rb")
stopping = false
Signal.trap("TERM") { stopping = true }
until stopping
  File.write(File.join(Dir.home, "run", "#{name}.heartbeat"), "#{Process.pid} #{Time.now.to_f}\n")
  sleep 0.5 # the job
end
