// The TypeORM CLI's data source (`npm run migration:*`); reads the same environment as the app.
import 'reflect-metadata';
import { config as loadDotenv } from 'dotenv';
import { DataSource } from 'typeorm';
import { AppConfig } from '../config/app-config';
import { validateEnv } from '../config/env.schema';
import { dataSourceOptions } from './data-source.options';

loadDotenv({ quiet: true });
export default new DataSource(dataSourceOptions(new AppConfig(validateEnv(process.env))));
