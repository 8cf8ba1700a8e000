# A long-running Pampa process (worker, dispatcher, jobs, planner): runs one short job after another,
# each writing a heartbeat, and says what it does on stdout, which bin/restart appends to ~/log/NAME.log
# (`pampa logs demo` shows it). On TERM it finishes the job it is running, then exits (a graceful stop).
name = File.basename($PROGRAM_NAME, ".rb")
$stdout.sync = true
revision = (File.read("REVISION").strip rescue `git rev-parse HEAD 2>/dev/null`.strip)
stamp = -> { Time.now.utc.strftime("%Y-%m-%dT%H:%M:%S") }
puts "#{stamp.call} #{name}: started, pid #{Process.pid}, revision #{revision[0, 12]}"
stopping = false
Signal.trap("TERM") { stopping = true }
jobs = 0
until stopping
  File.write(File.join(Dir.home, "run", "#{name}.heartbeat"), "#{Process.pid} #{Time.now.to_f}\n")
  sleep 0.5 # the job
  jobs += 1
  puts "#{stamp.call} #{name}: processed job #{jobs / 60}" if (jobs % 60).zero?
end
puts "#{stamp.call} #{name}: stopped after the job it was running"
