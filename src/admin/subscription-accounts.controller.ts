import { Body, Controller, Delete, Get, HttpCode, Param, Post, Query, UseGuards, UsePipes, UseInterceptors } from '@nestjs/common';
import { InvalidRequestError } from '../common/errors';
import { parseAccounts } from '../subscription/account-import';
import { AccountAdmin, type AccountView } from '../subscription/account-admin.service';
import { isSubscriptionProvider } from '../subscription/subscription.types';
import { AdminAuditInterceptor } from './admin-audit.interceptor';
import { AdminGuard } from './admin.guard';
import { NoNulPipe } from './admin-validation.pipe';
import { AddAccountDto, adminBody, ImportAccountsDto } from './dto/subscription-accounts.dto';

/**
 * Subscription accounts (Claude Code and Codex logins): their state, cooldowns and last errors;
 * add, import, disable, enable, refresh, remove. Tokens go in and never come out.
 */
@UsePipes(NoNulPipe)
@Controller('admin/accounts')
@UseGuards(AdminGuard)
@UseInterceptors(AdminAuditInterceptor)
export class SubscriptionAccountsController {
  constructor(private readonly accounts: AccountAdmin) {}

  @Get()
  async list(@Query() query: Record<string, unknown>): Promise<{ object: 'list'; data: AccountView[] }> {
    // Refused as the key endpoints refuse them: a filter that is ignored lists what was not asked for.
    const unknown = Object.keys(query).filter((k) => k !== 'provider');
    if (unknown.length > 0)
      throw new InvalidRequestError(`Invalid query: ${unknown.map((k) => `property ${k} should not exist`).join('; ')}`, unknown[0]);
    const provider = query.provider;
    if (provider !== undefined && (typeof provider !== 'string' || !isSubscriptionProvider(provider)))
      throw new InvalidRequestError(`provider must be claude or codex, not ${JSON.stringify(provider)}`, 'provider');
    return { object: 'list', data: await this.accounts.list(provider) };
  }

  @Get(':id')
  get(@Param('id') id: string): Promise<AccountView> {
    return this.accounts.get(id);
  }

  @Post()
  @HttpCode(201)
  add(@Body(adminBody) dto: AddAccountDto): Promise<AccountView> {
    const entry: Record<string, unknown> = { ...dto };
    delete entry.provider;
    const { accounts, errors } = parseAccounts(dto.provider, entry);
    if (errors.length > 0 || accounts.length !== 1)
      throw new InvalidRequestError(`Invalid account: ${errors.map((e) => e.replace(/^\(account\)\./, '')).join('; ')}`);
    return this.accounts.add(accounts[0]);
  }

  /** Import entries in the files' format. All entries are checked first: any problem is a 400 and nothing is stored. */
  @Post('import')
  @HttpCode(200)
  async import(@Body(adminBody) dto: ImportAccountsDto) {
    const { errors } = parseAccounts(dto.provider, { accounts: dto.accounts }, { positionalNames: false });
    if (errors.length > 0) throw new InvalidRequestError(`Invalid accounts, nothing imported: ${errors.join('; ')}`, 'accounts');
    return this.accounts.import(dto.provider, { accounts: dto.accounts });
  }

  @Post(':id/disable')
  @HttpCode(200)
  disable(@Param('id') id: string): Promise<AccountView> {
    return this.accounts.disable(id);
  }

  @Post(':id/enable')
  @HttpCode(200)
  enable(@Param('id') id: string): Promise<AccountView> {
    return this.accounts.enable(id);
  }

  @Post(':id/refresh')
  @HttpCode(200)
  refresh(@Param('id') id: string) {
    return this.accounts.refresh(id);
  }

  @Delete(':id')
  @HttpCode(204)
  async remove(@Param('id') id: string): Promise<void> {
    await this.accounts.remove(id);
  }
}
