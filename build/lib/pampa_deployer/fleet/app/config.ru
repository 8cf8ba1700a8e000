# Pampa demo app: a Rack app served by puma that answers with the revision it runs.
require "sequel"

REVISION = `git rev-parse HEAD 2>/dev/null`.strip
DB = Sequel.connect(ENV.fetch("DATABASE_URL", "sqlite://db/app.sqlite3"))

run lambda { |_env|
  tables = DB.tables.map(&:to_s).sort.join(",")
  body = "pampa-demo revision=#{REVISION} host=#{ENV.fetch('PAMPA_HOST', '?')} tables=#{tables}\n"
  [200, { "content-type" => "text/plain" }, [body]]
}
