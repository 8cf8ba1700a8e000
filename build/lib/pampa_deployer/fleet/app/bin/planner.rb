load File.join(__dir__, "process.rb")
