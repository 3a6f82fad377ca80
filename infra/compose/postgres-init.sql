-- Runs once, on an empty Postgres volume: the Hive metastore of `encore sql-server` (the compose profile's
-- spark.hadoop.javax.jdo.option.* settings) beside MLflow's database.
CREATE DATABASE metastore OWNER encore;
