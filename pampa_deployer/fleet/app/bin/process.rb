# A long-running Pampa process (worker, dispatcher, jobs, planner): writes a heartbeat, and says what it
# does on stdout, which bin/restart appends to ~/log/NAME.log (`pampa logs demo` shows it).
name = File.basename($PROGRAM_NAME, ".rb")
$stdout.sync = true
revision = (File.read("REVISION").strip rescue `git rev-parse HEAD 2>/dev/null`.strip)
stamp = -> { Time.now.utc.strftime("%Y-%m-%dT%H:%M:%S") }
puts "#{stamp.call} #{name}: started, pid #{Process.pid}, revision #{revision[0, 12]}"
beats = 0
# No TERM trap: Ruby exits at once on TERM, even inside sleep.
loop do
  File.write(File.join(Dir.home, "run", "#{name}.heartbeat"), "#{Process.pid} #{Time.now.to_f}\n")
  puts "#{stamp.call} #{name}: processed job #{beats / 15}" if beats % 15 == 0 && beats > 0
  beats += 1
  sleep 2
end
