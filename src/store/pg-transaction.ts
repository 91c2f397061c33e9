/**
 * One transaction on a connection of `pool`, for the PostgreSQL control store and audit sink
 * alike: `body` runs between `begin` (BEGIN, or BEGIN with an isolation level) and COMMIT, and a
 * failure rolls back and rejects.
 */
import type pg from 'pg';

export async function inTransaction<T>(pool: pg.Pool, body: (client: pg.PoolClient) => Promise<T>, begin = 'BEGIN'): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query(begin);
    const result = await body(client);
    await client.query('COMMIT');
    client.release();
    return result;
  } catch (err) {
    // A connection whose ROLLBACK failed is in an unknown state: destroy it rather than reuse it.
    await client.query('ROLLBACK').then(
      () => client.release(),
      (rollbackErr: Error) => client.release(rollbackErr),
    );
    throw err;
  }
}
