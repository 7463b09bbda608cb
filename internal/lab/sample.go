package lab

import (
	"context"
	"fmt"
	"strings"
)

// sampleSchema is the lab's data set: a small shop (products, customers, orders), enough for reads
// that hit an index and writes that insert orders.
const sampleSchema = `
CREATE TABLE products (
	id       int PRIMARY KEY,
	name     text NOT NULL,
	category text NOT NULL,
	price    numeric(10,2) NOT NULL,
	stock    int NOT NULL
);
INSERT INTO products
SELECT g, 'Product ' || g,
       (ARRAY['books','garden','kitchen','toys','tools','music','sports','beauty'])[1 + g %% 8],
       (5 + (g * 37) %% 500) + 0.99, 100 + g %% 50
FROM generate_series(1, %[1]d) g;

CREATE TABLE customers (
	id     int PRIMARY KEY,
	name   text NOT NULL,
	email  text NOT NULL UNIQUE,
	region text NOT NULL
);
INSERT INTO customers
SELECT g, 'Customer ' || g, 'customer' || g || '@example.com', (ARRAY[%[3]s])[1 + g %% %[4]d]
FROM generate_series(1, %[2]d) g;

CREATE TABLE orders (
	id          bigserial PRIMARY KEY,
	customer_id int NOT NULL REFERENCES customers,
	product_id  int NOT NULL REFERENCES products,
	quantity    int NOT NULL CHECK (quantity > 0),
	region      text NOT NULL,
	created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_customer_idx ON orders (customer_id);
ANALYZE;
`

// Sizes of the sample data set.
const (
	SampleProducts  = 10000
	SampleCustomers = 5000
)

// loadSample creates the lab database on the primary and fills it.
func (l *Lab) loadSample(ctx context.Context) error {
	p := l.regions[l.primary]
	conn, err := p.node.Connect(ctx, "postgres")
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+Database)
	conn.Close(ctx)
	if err != nil {
		return fmt.Errorf("create database %s: %w", Database, err)
	}
	conn, err = connect(ctx, p.endpoint().String())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	quoted := make([]string, len(l.regions))
	for i, r := range l.regions {
		quoted[i] = "'" + r.name + "'" // region names are validated: letters, digits, dashes
	}
	sql := fmt.Sprintf(sampleSchema, SampleProducts, SampleCustomers, strings.Join(quoted, ","), len(l.regions))
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("load the sample data: %w", err)
	}
	return nil
}
