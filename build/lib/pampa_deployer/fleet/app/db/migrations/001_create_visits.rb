Sequel.migration do
  change do
    create_table(:visits) do
      primary_key :id
      String :revision
      DateTime :at
    end
  end
end
