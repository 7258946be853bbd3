"""PostgreSQL access: the pool, named SQL, migrations and one store per resource."""
