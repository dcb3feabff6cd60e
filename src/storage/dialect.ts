export type Dialect = 'postgres' | 'sqlite';
