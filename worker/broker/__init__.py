"""The broker edge: broker-neutral messages, topology as data and its one declarer, and the
transports that carry them (RabbitMQ over py-amqp, in memory)."""
